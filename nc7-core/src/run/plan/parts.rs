//! Every resolved nucleotide config typed into its part, once.

use super::*;

/// The typed parts of a checked project, by entry.
pub(super) struct Parts<'c> {
    pub(super) entries: Vec<(&'c NucleotideEntry, Part)>,
}

impl<'c> Parts<'c> {
    /// Types every resolved nucleotide config once; a problem is a diagnostic.
    pub(super) fn new(check: &'c ProjectCheck, diags: &mut Diagnostics) -> Parts<'c> {
        let mut entries = Vec::new();
        for e in &check.nucleotides {
            if e.common.is_none() || e.registration.is_none() {
                continue; // Reported by the check.
            }
            match Part::from_entry(e) {
                Ok(mut p) => {
                    with_project_dir(&mut p.config, &check.project);
                    if let Some(r) = e.registration {
                        let schema = (r.config_schema)();
                        project_paths(&mut p.config, &schema, &schema, &check.project);
                    }
                    entries.push((e, p))
                }
                Err(message) => diags.push(
                    Diagnostic::error(
                        Code::UNKNOWN_FIELD,
                        e.name(),
                        message.to_string(),
                        "remove the field the message names from this config".into(),
                    )
                    .with_file(e.file.as_deref()),
                ),
            }
        }
        Parts { entries }
    }

    pub(super) fn of_sections(&self, sections: &[&str]) -> Vec<Part> {
        self.entries
            .iter()
            .filter(|(e, _)| sections.contains(&e.section))
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// The model, with its handler `name` and, if built, the evaluation handler `eval`.
    pub(super) fn model(
        &self,
        check: &ProjectCheck,
        name: &str,
        eval: Option<&str>,
        config: ModelConfig,
    ) -> Option<ModelPlan> {
        let handler = check.handler(name)?;
        let eval_handler = eval
            .and_then(|e| check.handler(e))
            .unwrap_or_else(|| handler.clone());
        let sections: Vec<&str> = MODEL_SECTIONS.iter().map(|s| s.key).collect();
        Some(ModelPlan {
            handler,
            eval_handler,
            parts: self.of_sections(&sections),
            config,
        })
    }

    /// The data nucleotide of `section` (in `slot` for named sections).
    pub(super) fn data(&self, section: &str, slot: Option<&str>) -> Option<Part> {
        self.entries
            .iter()
            .find(|(e, _)| e.section == section && e.slot.as_deref() == slot)
            .map(|(_, p)| p.clone())
    }

    /// The callbacks of the handler `name`.
    pub(super) fn callbacks(&self, check: &ProjectCheck, name: &str) -> CallbacksPlan {
        let Some(handler) = check.handler(name) else {
            return CallbacksPlan::default();
        };
        let names: Vec<&str> = handler
            .helix()
            .names()
            .skip(handler.helix().incoming_len())
            .collect();
        let parts = self
            .entries
            .iter()
            .filter(|(e, p)| p.kind == Kind::CoordinatorCallback && names.contains(&e.name()))
            .map(|(_, p)| p.clone())
            .collect();
        CallbacksPlan {
            handler: Some(handler),
            parts,
        }
    }

    /// The KPI handler `name` and its KPI nucleotides, if the run has any.
    pub(super) fn kpi(&self, check: &ProjectCheck, name: &str) -> Option<KpiEvaluatorPlan> {
        let handler = check.handler(name)?;
        let parts = self
            .entries
            .iter()
            .filter(|(_, p)| matches!(p.kind, Kind::KpiPlugin | Kind::KpiAccumulator))
            .map(|(_, p)| p.clone())
            .collect();
        Some(KpiEvaluatorPlan { handler, parts })
    }
}

/// The text a config string may hold for the project's directory, so that paths in configs can
/// name files of the project wherever nc7 runs (`"${project}/inference/last_run/results"`).
pub(super) const PROJECT_DIR: &str = "${project}";

/// The mark of a config field whose strings are paths (a field's
/// `#[schemars(extend("x-nc7-path" = true))]`): nc7 makes the relative ones relative to the
/// project, so that a command means the same files from whatever folder it runs in.
pub const PATH_MARK: &str = "x-nc7-path";

/// Makes the relative paths in `config`'s marked fields ([`PATH_MARK`]) paths in `project`,
/// following `schema` (whose `$defs` are in `root`).
fn project_paths(config: &mut Value, schema: &Value, root: &Value, project: &Path) {
    if schema.get(PATH_MARK) == Some(&Value::Bool(true)) {
        in_project(config, project);
        return;
    }
    if let Some(target) = schema.get("$ref").and_then(Value::as_str)
        && let Some(name) = target.strip_prefix("#/$defs/")
        && let Some(def) = root.get("$defs").and_then(|d| d.get(name))
    {
        project_paths(config, def, root, project);
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for sub in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            project_paths(config, sub, root, project);
        }
    }
    match config {
        Value::Object(fields) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let rest = schema.get("additionalProperties").filter(|s| s.is_object());
            for (k, v) in fields.iter_mut() {
                if let Some(s) = props.and_then(|p| p.get(k)).or(rest) {
                    project_paths(v, s, root, project);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items").filter(|s| s.is_object()) {
                items
                    .iter_mut()
                    .for_each(|v| project_paths(v, s, root, project));
            }
        }
        _ => {}
    }
}

/// Every relative path in `value` (a string, or the strings of a list or map) joined to
/// `project`.
fn in_project(value: &mut Value, project: &Path) {
    match value {
        Value::String(s) if !s.is_empty() && !Path::new(s.as_str()).is_absolute() => {
            *s = project.join(s.as_str()).display().to_string();
        }
        Value::Array(items) => items.iter_mut().for_each(|v| in_project(v, project)),
        Value::Object(fields) => fields.values_mut().for_each(|v| in_project(v, project)),
        _ => {}
    }
}

/// Replaces [`PROJECT_DIR`] in every string of a nucleotide's config by `project`.
fn with_project_dir(config: &mut Value, project: &Path) {
    match config {
        Value::String(s) if s.contains(PROJECT_DIR) => {
            *s = s.replace(PROJECT_DIR, &project.display().to_string());
        }
        Value::Array(items) => items.iter_mut().for_each(|v| with_project_dir(v, project)),
        Value::Object(fields) => fields
            .values_mut()
            .for_each(|v| with_project_dir(v, project)),
        _ => {}
    }
}
