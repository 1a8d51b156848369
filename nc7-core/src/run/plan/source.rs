//! Where an inference run's weights come from, and the data feeder's shard.

use super::*;

/// Where an inference run's weights come from: `--checkpoint`, else `--saved-model` or
/// `inferer_config.saved_model`, else the newest saved model.
pub(super) fn model_source(
    project: &Path,
    request: &InferRequest,
    config: &InfererConfig,
    for_check: bool,
) -> Result<ModelSource, Box<Diagnostic>> {
    let dirs = TrainingDirs::of(project);
    use crate::failure::Coded as _;
    let fail = |code: Code, message: String, help: &str| {
        Box::new(Diagnostic::error(code, "", message, help.to_owned()))
    };
    if let Some(checkpoint) = &request.checkpoint {
        let cp = find_checkpoint(&dirs, Some(checkpoint)).map_err(|e| {
            fail(
                e.code(),
                e.to_string(),
                "name a checkpoint in `checkpoints/`, `best`, or a path",
            )
        })?;
        return Ok(ModelSource::Checkpoint {
            weights: cp.file(crate::coordinator::checkpoint::WEIGHTS),
            dir: cp.dir,
        });
    }
    let named = request
        .saved_model
        .as_deref()
        .or(config.saved_model.as_deref());
    let dir = match named {
        Some(tag) => {
            let path = Path::new(tag);
            let dir = if path.is_absolute() || path.is_dir() {
                path.to_owned()
            } else {
                dirs.saved_models.join(tag)
            };
            if !dir.join(crate::export::WEIGHTS).is_file() {
                let have: Vec<String> = crate::export::list(&dirs.saved_models)
                    .into_iter()
                    .filter_map(|(_, p)| Some(p.file_name()?.to_string_lossy().into_owned()))
                    .collect();
                return Err(fail(
                    Code::NO_WEIGHTS,
                    format!(
                        "saved model `{tag}`: {} holds no saved model ({} has {})",
                        dir.display(),
                        dirs.saved_models.display(),
                        if have.is_empty() {
                            "none".to_owned()
                        } else {
                            suggest::list(&have)
                        }
                    ),
                    "name a saved model in `saved_models/` (`step-N`) or a path to one",
                ));
            }
            dir
        }
        None => match crate::export::list(&dirs.saved_models).pop() {
            Some((_, dir)) => dir,
            None if for_check => return Ok(ModelSource::TrainingConfigs),
            None => {
                return Err(fail(
                    Code::NO_WEIGHTS,
                    format!("no saved model in {}", dirs.saved_models.display()),
                    &format!(
                        "train the project first, or export a checkpoint with `export {}`",
                        project.display()
                    ),
                ));
            }
        },
    };
    SavedModel::open(&dir)
        .map(ModelSource::Saved)
        .map_err(|e| fail(e.code(), e.to_string(), "export the model again"))
}

/// Sets the shard of the data feeder's file list (of each, when several are joined).
pub(super) fn shard_file_list(
    feeder: &mut Part,
    (number, index): (usize, usize),
) -> Result<(), Box<Diagnostic>> {
    let fail = |message: String, help: &str| {
        Box::new(Diagnostic::error(
            Code::FIELD_TYPE,
            &feeder.name,
            message,
            help.to_owned(),
        ))
    };
    if number == 0 || index >= number {
        return Err(fail(
            format!("shard index {index} is out of range for {number} shards"),
            "give 0 ≤ --shard-index < --number-of-shards",
        ));
    }
    let class = feeder.registration.class_name;
    let name = feeder.name.clone();
    // Joined file lists are each split the same way.
    let lists: Vec<&mut serde_json::Map<String, Value>> = match feeder.config.get_mut("file_list") {
        Some(Value::Object(list)) => vec![list],
        Some(Value::Array(lists)) => lists.iter_mut().filter_map(Value::as_object_mut).collect(),
        _ => Vec::new(),
    };
    if lists.is_empty() {
        return Err(Box::new(Diagnostic::error(
            Code::FIELD_TYPE,
            &name,
            format!(
                "--number-of-shards: the data feeder `{name}` ({class}) has no `file_list` to split into shards"
            ),
            "use a data feeder with a `file_list`, or leave out the shard options".into(),
        )));
    }
    for list in lists {
        list.insert("number_of_shards".into(), number.into());
        list.insert("shard_index".into(), index.into());
    }
    Ok(())
}
