//! `ExperimentCsv`: one row per training run in a CSV table.

use super::*;

/// `ExperimentCsv`'s config.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExperimentCsvConfig {
    /// The table, relative to the project folder.
    #[serde(default = "experiments_file")]
    pub file: String,
}

fn experiments_file() -> String {
    "logs/experiments.csv".into()
}

/// Every value `ExperimentCsv` reads (losses and metrics).
#[derive(Incoming)]
pub struct Values<B: Backend> {
    /// Whatever the inbound nodes give.
    pub values: Nest<B>,
}

/// One row per training run in a CSV table (Dida's experiment tracking): when the run ended,
/// the project, the run's name and MLflow run id, its hyperparameters (the config values it
/// sets over the project's configs: `--set`, `NC7_…`, `--config-dir`, one column each), the
/// step and the last evaluation's mean of every single-value key it reads (losses, metrics). A key no earlier row had becomes a new column. Put it in
/// `callbacks_eval`.
#[nucleotide(kind = CoordinatorCallback)]
pub struct ExperimentCsv {
    file: String,
    sums: BTreeMap<String, (f64, usize)>,
}

impl<B: Backend> Build<B> for ExperimentCsv {
    type Config = ExperimentCsvConfig;
    type Input = Values<B>;
    type Output = NoKeys;
    fn build(c: &ExperimentCsvConfig, _: &B::Device) -> Result<Self, BoxError> {
        save_path(
            Path::new("."),
            &SaveName {
                name: Some(&c.file),
                ..SaveName::default()
            },
        )?;
        Ok(ExperimentCsv {
            file: c.file.clone(),
            sums: BTreeMap::new(),
        })
    }
}

impl<B: Backend> CoordinatorCallback<B> for ExperimentCsv {
    fn on_iteration_end(
        &mut self,
        input: Values<B>,
        ctx: &CallbackContext,
    ) -> Result<Option<NoKeys>, BoxError> {
        if ctx.iteration.iteration == 1 {
            // A new evaluation: the row keeps the last one.
            self.sums.clear();
        }
        for (key, value) in input.values.flatten() {
            let Nest::Tensor(t) = value else { continue };
            if t.shape().num_elements() != 1 {
                continue;
            }
            let v: Vec<f64> = t
                .clone()
                .into_data()?
                .convert::<f64>()
                .to_vec()
                .map_err(|e| format!("key `{key}`: {e:?}"))?;
            let e = self.sums.entry(key).or_insert((0.0, 0));
            e.0 += v[0];
            e.1 += 1;
        }
        Ok(Some(NoKeys))
    }

    fn end(&mut self, ctx: &CallbackContext) -> Result<(), BoxError> {
        let root = project_of(&ctx.log_dir);
        let mut row: BTreeMap<String, String> = self
            .sums
            .iter()
            .map(|(k, (s, n))| (k.clone(), format!("{:.6}", s / (*n).max(1) as f64)))
            .collect();
        row.insert(
            "finished".into(),
            crate::project::rfc3339(std::time::SystemTime::now()),
        );
        row.insert(
            "project".into(),
            root.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        row.insert("step".into(), ctx.summary_step.to_string());
        row.insert("run".into(), ctx.run.name.clone());
        if let Some(id) = &ctx.run.mlflow_run_id {
            row.insert("mlflow_run_id".into(), id.clone());
        }
        for (path, value) in &ctx.run.hyperparameters {
            row.insert(path.clone(), value.clone());
        }
        let file = root.join(&self.file);
        append_row(&file, row)?;
        log::info!("experiment row appended to {}", file.display());
        Ok(())
    }
}

/// The project folder of a callback folder (`<project>/training/callbacks/<mode>`), or the
/// folder itself elsewhere.
pub(super) fn project_of(log_dir: &Path) -> PathBuf {
    let in_training = log_dir.parent().and_then(Path::file_name) == Some("callbacks".as_ref());
    match log_dir.ancestors().nth(3) {
        Some(root) if in_training => root.to_owned(),
        _ => log_dir.to_owned(),
    }
}

/// Appends a row to a CSV table (created with its folder when missing); columns the row adds
/// go after the existing ones, and earlier rows leave them empty.
pub(crate) fn append_row(
    path: &Path,
    row: BTreeMap<String, String>,
) -> Result<(), crate::data::DataError> {
    let mut header: Vec<String> = Vec::new();
    let mut rows: Vec<BTreeMap<String, String>> = Vec::new();
    // nc7 rewrites only a table it wrote: not a link, not another program's file.
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(format!(
            "{} is a link; nc7 writes its experiment table only into a file of its own (set `file` to another path, or remove the link)",
            path.display()
        )
        .into());
    }
    if path.exists() {
        let mut reader =
            csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
        header = reader
            .headers()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .iter()
            .map(str::to_owned)
            .collect();
        let ours = ["run", "step", "finished"]
            .iter()
            .all(|c| header.iter().any(|h| h == c));
        if !ours {
            return Err(format!(
                "{} was not written by nc7 (its header row lacks the `run`, `step` and `finished` columns), so it is left as it is; set `file` to another path",
                path.display()
            )
            .into());
        }
        for r in reader.records() {
            let r = r.map_err(|e| format!("{}: {e}", path.display()))?;
            rows.push(
                header
                    .iter()
                    .cloned()
                    .zip(r.iter().map(str::to_owned))
                    .collect(),
            );
        }
    }
    for key in row.keys() {
        if !header.contains(key) {
            header.push(key.clone());
        }
    }
    rows.push(row);
    let mut writer = csv::Writer::from_writer(Vec::new());
    let bad = |e: csv::Error| format!("{}: {e}", path.display());
    writer.write_record(&header).map_err(bad)?;
    for r in &rows {
        writer
            .write_record(header.iter().map(|h| r.get(h).map_or("", String::as_str)))
            .map_err(bad)?;
    }
    let bytes = writer.into_inner().map_err(|e| e.to_string())?;
    create_parent(path)?;
    crate::project::replace_file(path, &bytes).map_err(|e| {
        crate::data::DataError::caused(format!("cannot write {}: {e}", path.display()), e)
    })
}
