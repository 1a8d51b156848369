//! The trainer's checkpoints: written after each epoch (and on a stop), read back to continue
//! a run exactly, and the best one kept.

use super::*;

impl<B: AutodiffBackend> Trainer<'_, B> {
    /// Loads the checkpoint `cp` continues from (verified) into the model and the run state;
    /// a chosen one (`--checkpoint`) moves the newer ones aside first.
    pub(super) fn resume(&mut self, cp: Checkpoint) -> Result<(), TrainError> {
        if self.options.checkpoint.is_some() {
            abandon_newer(self.dirs, cp.global_step)?;
        }
        let weights = std::fs::read(cp.file(WEIGHTS))
            .map_err(failed(&format!("reading {}", cp.file(WEIGHTS).display())))?;
        let mut optimizers = Vec::new();
        for p in self.model.parts() {
            if p.kind != Kind::ModelPlugin {
                continue;
            }
            let path = cp.file(&optimizer_file(&p.name));
            let bytes =
                std::fs::read(&path).map_err(failed(&format!("reading {}", path.display())))?;
            optimizers.push((p.name.clone(), bytes));
        }
        load_state(
            &mut self.model,
            &weights,
            optimizers,
            &self.device,
            "the checkpoint's",
        )?;
        let saved: RunState = serde_json::from_value(cp.state.clone())
            .map_err(failed("reading the checkpoint's state"))?;
        let now = self.state;
        let mut changes = Vec::new();
        if saved.seed != now.seed {
            changes.push(format!("random_seed {} → {}", saved.seed, now.seed));
        }
        if saved.batch_size != 0 && saved.batch_size != now.batch_size {
            changes.push(format!(
                "train batch size {} → {}",
                saved.batch_size, now.batch_size
            ));
        }
        if saved.train_samples != 0 && saved.train_samples != now.train_samples {
            changes.push(format!(
                "training samples {} → {}",
                saved.train_samples, now.train_samples
            ));
        }
        if let (Some(a), Some(b)) = (saved.shuffle, now.shuffle)
            && a != b
        {
            changes.push(format!("shuffle {a} → {b}"));
        }
        // Another number of devices shards each batch otherwise and sums the gradients in
        // another order.
        if saved.devices.max(1) != now.devices {
            changes.push(format!(
                "devices {} → {}",
                saved.devices.max(1),
                now.devices
            ));
        }
        if !changes.is_empty() {
            if !self.options.accept_changed_order {
                return Err(TrainError::ChangedOrder {
                    checkpoint: cp.dir.clone(),
                    changes,
                });
            }
            log::warn!(
                "continuing with another data order or other devices than the checkpoint's: {}",
                changes.join(", ")
            );
        }
        self.state = RunState {
            seed: now.seed,
            batch_size: now.batch_size,
            train_samples: now.train_samples,
            shuffle: now.shuffle,
            devices: now.devices,
            // The saved scale when the run continues in the same precision.
            loss_scale: now.loss_scale.and(saved.loss_scale.or(now.loss_scale)),
            ..saved
        };
        log::info!(
            "continuing from {} (step {})",
            cp.dir.display(),
            self.state.global_step
        );
        Ok(())
    }

    /// Protects the best evaluation's checkpoint and names it in `checkpoints/best.json`.
    pub(super) fn keep_best(&mut self, keep: &KeepBest) -> Result<(), TrainError> {
        let Some((step, value)) = self.history.best(keep)? else {
            return Ok(());
        };
        self.checkpoints.protect(Some(step));
        let best = BestCheckpoint {
            checkpoint: Checkpoints::name_of(step),
            step,
            monitor: keep.monitor.clone(),
            value,
        };
        let file = best_file(&self.dirs.checkpoints);
        let text = serde_json::to_vec_pretty(&best).expect("best checkpoints serialize");
        crate::project::replace_file(&file, &text)
            .map_err(failed(&format!("writing {}", file.display())))
    }

    /// Writes the checkpoint of the current step: weights, each plugin's optimizer state and
    /// the run state. An `interim` one is that of a run a signal stops between regular
    /// checkpoints (see [`Checkpoints::save_interim`]).
    pub(super) fn checkpoint(&self, interim: bool) -> Result<(), TrainError> {
        let weights =
            to_safetensors(self.model.tensors(), None).map_err(failed("saving weights"))?;
        let optimizers = self
            .model
            .optimizer_states()
            .map_err(failed("saving optimizer state"))?;
        let names: Vec<String> = optimizers.iter().map(|(p, _)| optimizer_file(p)).collect();
        let mut files: Vec<(&str, &[u8])> = vec![(WEIGHTS, &weights)];
        for (name, (_, bytes)) in names.iter().zip(&optimizers) {
            files.push((name, bytes));
        }
        let state = serde_json::to_value(self.state).expect("run states serialize");
        if interim {
            self.checkpoints.save_interim(
                self.state.global_step,
                self.state.epoch,
                &files,
                &state,
            )?;
        } else {
            self.checkpoints
                .save(self.state.global_step, self.state.epoch, &files, &state)?;
        }
        Ok(())
    }
}

/// Moves the checkpoints newer than `step` to `checkpoints/abandoned/` (kept, never read
/// again): a run continued from an earlier checkpoint replaces them.
fn abandon_newer(dirs: &TrainingDirs, step: u64) -> Result<(), TrainError> {
    let newer: Vec<(u64, PathBuf)> = Checkpoints::new(&dirs.checkpoints, usize::MAX)
        .list()
        .into_iter()
        .filter(|(s, _)| *s > step)
        .collect();
    if newer.is_empty() {
        return Ok(());
    }
    let aside = dirs.checkpoints.join("abandoned");
    std::fs::create_dir_all(&aside).map_err(failed(&format!("creating {}", aside.display())))?;
    for (_, dir) in &newer {
        let to = aside.join(dir.file_name().unwrap_or_default());
        if to.exists() {
            std::fs::remove_dir_all(&to).map_err(failed(&format!("removing {}", to.display())))?;
        }
        std::fs::rename(dir, &to).map_err(failed(&format!("moving {}", dir.display())))?;
    }
    log::info!(
        "continuing from step {step}: the newer checkpoints ({}) moved to {}",
        newer
            .iter()
            .map(|(_, d)| d
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned())
            .collect::<Vec<_>>()
            .join(", "),
        aside.display()
    );
    Ok(())
}
