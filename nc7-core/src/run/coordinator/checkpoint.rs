//! Checkpoints that survive crashes: each is a folder `ckpt-<global step>` of files and a
//! sealed manifest (their sha256, and the run state a resume trusts; see [`integrity`]),
//! written under a temporary name, fsynced and renamed; old ones are removed only after the
//! new one is complete; loading verifies every byte.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::integrity::{self, FileEntry};

/// The manifest's file name inside a checkpoint folder.
pub const MANIFEST: &str = integrity::MANIFEST;
/// The model's weights inside a checkpoint folder (safetensors, `<plugin>.<parameter path>`).
pub const WEIGHTS: &str = "model.safetensors";
const PREFIX: &str = "ckpt-";

/// The file of a plugin's optimizer state inside a checkpoint folder.
pub(crate) fn optimizer_file(plugin: &str) -> String {
    format!("optimizer-{plugin}.bin")
}

/// Why a checkpoint cannot be written or used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file system operation failed.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A checkpoint does not match its manifest.
    #[error("checkpoint `{}` is corrupt: {problem}; {}", path.display(), match previous {
        Some(p) => format!("the previous checkpoint `{}` verifies: continue from it with `train --continue --checkpoint {}` (or export it with `export --checkpoint {}`), or remove the corrupt one", p.display(), p.file_name().unwrap_or_default().to_string_lossy(), p.file_name().unwrap_or_default().to_string_lossy()),
        None => "no earlier checkpoint verifies; remove it to start over".to_owned(),
    })]
    Corrupt {
        /// The checkpoint folder.
        path: PathBuf,
        /// What does not match.
        problem: String,
        /// The newest earlier checkpoint that verifies, when there is one.
        previous: Option<PathBuf>,
    },
    /// There is no checkpoint to use.
    #[error("no checkpoint in `{}`; train first", dir.display())]
    NoCheckpoint {
        /// The checkpoints folder.
        dir: PathBuf,
    },
    /// `--checkpoint best` without a readable `best.json`.
    #[error("--checkpoint best: cannot read {} ({problem}); it is written when trainer_config.keep_best is set", file.display())]
    NoBest {
        /// The `best.json` file.
        file: PathBuf,
        /// Why it cannot be read.
        problem: String,
    },
    /// A file name that would leave the checkpoint folder.
    #[error("checkpoint file name `{0}` is not a plain file name")]
    BadName(String),
    /// `--checkpoint` names a folder that is no checkpoint.
    #[error("`{}` is not a checkpoint (it has no {MANIFEST}); name a folder of `{}` ({}), `best`, or a checkpoint's path", path.display(), dir.display(), if have.is_empty() { "it has none".to_owned() } else { have.join(", ") })]
    NotACheckpoint {
        /// What was named.
        path: PathBuf,
        /// The run's checkpoints folder.
        dir: PathBuf,
        /// The checkpoints there.
        have: Vec<String>,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError {
    let path = path.to_owned();
    move |source| CheckpointError::Io {
        action,
        path,
        source,
    }
}

/// What a manifest says of one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    global_step: u64,
    epoch: u64,
    nc7_version: String,
    /// File name → (sha256 hex, size in bytes).
    files: BTreeMap<String, FileEntry>,
    /// Everything else a resume needs that is not a file (RNG state, data order position, ...).
    state: Value,
    /// Written because the run was interrupted between regular checkpoints: not counted in
    /// `checkpoints_to_keep`, and removed by the next regular checkpoint.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    interim: bool,
}

/// A verified checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Its folder.
    pub dir: PathBuf,
    /// The training steps done.
    pub global_step: u64,
    /// The epoch it was written in.
    pub epoch: u64,
    /// The state saved beside the files.
    pub state: Value,
    /// Its file names.
    pub files: Vec<String>,
}

impl Checkpoint {
    /// The path of one of its files.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The checkpoints of a run, in one folder, keeping the newest `keep` (and a protected one,
/// the best so far, when the run keeps the best).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoints {
    dir: PathBuf,
    keep: usize,
    protected: Option<u64>,
}

impl Checkpoints {
    /// Checkpoints in `dir`, keeping the newest `keep` (at least one).
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Checkpoints {
        Checkpoints {
            dir: dir.into(),
            keep: keep.max(1),
            protected: None,
        }
    }

    /// Keeps the checkpoint of `step` whatever its age (the best one); `None` protects none.
    pub fn protect(&mut self, step: Option<u64>) {
        self.protected = step;
    }

    /// The folder name of the checkpoint after `step` steps.
    pub fn name_of(step: u64) -> String {
        format!("{PREFIX}{step}")
    }

    /// Writes a checkpoint of `files` (name, bytes) and `state` after `global_step` steps.
    /// It appears under its final name only once complete and synced to disk; then the oldest
    /// beyond `keep` are removed. A checkpoint of the same step is replaced.
    pub fn save(
        &self,
        global_step: u64,
        epoch: u64,
        files: &[(&str, &[u8])],
        state: &Value,
    ) -> Result<Checkpoint, CheckpointError> {
        let saved = self.write(global_step, epoch, files, state, false)?;
        self.prune(global_step)?;
        Ok(saved)
    }

    /// Writes the checkpoint of a run interrupted between regular checkpoints (a signal): it
    /// removes none, counts for none of `keep`, and the next regular checkpoint removes it; so
    /// an interrupted and continued run keeps the checkpoints an uninterrupted one keeps.
    pub fn save_interim(
        &self,
        global_step: u64,
        epoch: u64,
        files: &[(&str, &[u8])],
        state: &Value,
    ) -> Result<Checkpoint, CheckpointError> {
        self.write(global_step, epoch, files, state, true)
    }

    fn write(
        &self,
        global_step: u64,
        epoch: u64,
        files: &[(&str, &[u8])],
        state: &Value,
        interim: bool,
    ) -> Result<Checkpoint, CheckpointError> {
        fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let name = Checkpoints::name_of(global_step);
        let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io("remove", &tmp))?;
        }
        fs::create_dir(&tmp).map_err(io("create", &tmp))?;
        // A write that fails takes its half-written folder with it.
        let written = (|| -> Result<Manifest, CheckpointError> {
            let mut entries = BTreeMap::new();
            for (file, bytes) in files {
                if !integrity::is_plain(file) || *file == MANIFEST || *file == integrity::DIGEST {
                    return Err(CheckpointError::BadName((*file).to_owned()));
                }
                write_synced(&tmp.join(file), bytes)?;
                entries.insert((*file).to_owned(), FileEntry::of(bytes));
            }
            let manifest = Manifest {
                global_step,
                epoch,
                nc7_version: env!("CARGO_PKG_VERSION").into(),
                files: entries,
                state: state.clone(),
                interim,
            };
            let text = serde_json::to_vec_pretty(&manifest).expect("manifests serialize");
            integrity::seal(&tmp, &text).map_err(io("write the manifest of", &tmp))?;
            sync_dir(&tmp)?;
            Ok(manifest)
        })();
        let manifest = integrity::or_remove(&tmp, written)?;
        let target = self.dir.join(&name);
        if target.exists() {
            let old = self.dir.join(format!(".{name}.old-{}", std::process::id()));
            fs::rename(&target, &old).map_err(io("move aside", &target))?;
            fs::rename(&tmp, &target).map_err(io("rename", &tmp))?;
            fs::remove_dir_all(&old).map_err(io("remove", &old))?;
        } else {
            fs::rename(&tmp, &target).map_err(io("rename", &tmp))?;
        }
        sync_dir(&self.dir)?;
        Ok(Checkpoint {
            dir: target,
            global_step,
            epoch,
            state: manifest.state,
            files: manifest.files.into_keys().collect(),
        })
    }

    /// Complete checkpoint folders, oldest first, with their global steps.
    pub fn list(&self) -> Vec<(u64, PathBuf)> {
        let mut out: Vec<(u64, PathBuf)> = fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|e| {
                let step = e.file_name().to_str()?.strip_prefix(PREFIX)?.parse().ok()?;
                Some((step, e.path()))
            })
            .collect();
        out.sort();
        out
    }

    /// Reads and verifies one checkpoint folder.
    pub fn load(&self, dir: &Path) -> Result<Checkpoint, CheckpointError> {
        verify(dir).map_err(|problem| CheckpointError::Corrupt {
            path: dir.to_owned(),
            problem,
            previous: self.previous_valid(dir),
        })
    }

    /// The newest checkpoint, verified; `None` when there is none. A corrupt newest one is an
    /// error that names the newest earlier one that verifies.
    pub fn newest(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        match self.list().pop() {
            None => Ok(None),
            Some((_, dir)) => self.load(&dir).map(Some),
        }
    }

    fn previous_valid(&self, dir: &Path) -> Option<PathBuf> {
        self.list()
            .into_iter()
            .rev()
            .map(|(_, p)| p)
            .skip_while(|p| p != dir)
            .skip(1)
            .find(|p| verify(p).is_ok())
    }

    /// After the regular checkpoint of `step`: removes the interim ones before it, then keeps
    /// the newest `keep`, and the protected one when it is older: `keep` checkpoints, or
    /// `keep + 1` while the best is not among the newest.
    fn prune(&self, step: u64) -> Result<(), CheckpointError> {
        let mut all = Vec::new();
        for (s, dir) in self.list() {
            if s < step && is_interim(&dir) {
                fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
            } else {
                all.push((s, dir));
            }
        }
        let excess = all.len().saturating_sub(self.keep);
        for (step, dir) in all.into_iter().take(excess) {
            if Some(step) != self.protected {
                fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
            }
        }
        Ok(())
    }
}

/// Whether the checkpoint in `dir` is an interim one (by its manifest).
fn is_interim(dir: &Path) -> bool {
    fs::read(dir.join(MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
        .is_some_and(|m| m.interim)
}

fn verify(dir: &Path) -> Result<Checkpoint, String> {
    let text = integrity::unseal(dir)?;
    let manifest: Manifest =
        serde_json::from_slice(&text).map_err(|e| format!("its {MANIFEST} is invalid: {e}"))?;
    integrity::check_files(dir, &manifest.files)?;
    Ok(Checkpoint {
        dir: dir.to_owned(),
        global_step: manifest.global_step,
        epoch: manifest.epoch,
        state: manifest.state,
        files: manifest.files.into_keys().collect(),
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    integrity::write_synced(path, bytes).map_err(io("write", path))
}

/// Makes a folder's entries (new names, renames) durable; a no-op where folders cannot be
/// opened as files.
fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The checkpoint `--checkpoint` names: `best` (the one `checkpoints/best.json` names), a
/// folder name in `checkpoints/`, or a path; the newest valid one when `None`.
pub fn find_checkpoint(
    dirs: &crate::project::TrainingDirs,
    checkpoint: Option<&Path>,
) -> Result<Checkpoint, CheckpointError> {
    use super::monitor::{BestCheckpoint, best_file};
    let checkpoints = Checkpoints::new(&dirs.checkpoints, usize::MAX);
    match checkpoint {
        Some(dir) if dir == Path::new("best") && !dir.exists() => {
            let file = best_file(&dirs.checkpoints);
            let best: BestCheckpoint = fs::read(&file)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                .map_err(|problem| CheckpointError::NoBest {
                    file: file.clone(),
                    problem,
                })?;
            checkpoints.load(&dirs.checkpoints.join(best.checkpoint))
        }
        Some(dir) => {
            let dir = if dir.is_absolute() || dir.exists() {
                dir.to_owned()
            } else {
                dirs.checkpoints.join(dir)
            };
            let named_one = dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(PREFIX));
            // A `ckpt-N` folder without a manifest is one whose writing was cut short.
            if !(dir.join(MANIFEST).exists() || named_one && dir.is_dir()) {
                return Err(CheckpointError::NotACheckpoint {
                    path: dir,
                    dir: dirs.checkpoints.clone(),
                    have: checkpoints
                        .list()
                        .into_iter()
                        .filter_map(|(_, p)| Some(p.file_name()?.to_string_lossy().into_owned()))
                        .collect(),
                });
            }
            checkpoints.load(&dir)
        }
        None => checkpoints
            .newest()?
            .ok_or_else(|| CheckpointError::NoCheckpoint {
                dir: dirs.checkpoints.clone(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn save_load_rotate_and_refuse_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        let ckpts = Checkpoints::new(tmp.path().join("checkpoints"), 2);
        assert_eq!(ckpts.newest().unwrap(), None);
        for step in [10u64, 20, 30] {
            let weights = vec![step as u8; 1000];
            let c = ckpts
                .save(
                    step,
                    step / 10,
                    &[("model.bin", &weights), ("optim.bin", b"o")],
                    &json!({"rng": step}),
                )
                .unwrap();
            assert_eq!(c.files, ["model.bin", "optim.bin"]);
        }
        // Only the newest two are kept; no temporary folder is left.
        let names: Vec<String> = fs::read_dir(tmp.path().join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(names, ["ckpt-20", "ckpt-30"]);
        let newest = ckpts.newest().unwrap().unwrap();
        assert_eq!(
            (newest.global_step, newest.epoch, newest.state.clone()),
            (30, 3, json!({"rng": 30}))
        );
        assert_eq!(
            fs::read(newest.file("model.bin")).unwrap(),
            vec![30u8; 1000]
        );

        // Saving the same step again replaces it.
        ckpts
            .save(30, 3, &[("model.bin", b"new")], &json!({}))
            .unwrap();
        assert_eq!(
            fs::read(ckpts.newest().unwrap().unwrap().file("model.bin")).unwrap(),
            b"new"
        );

        // One flipped byte: refused, and the previous checkpoint is offered.
        let path = tmp.path().join("checkpoints/ckpt-30/model.bin");
        fs::write(&path, b"nex").unwrap();
        let err = ckpts.newest().unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("ckpt-30` is corrupt: `model.bin` has 3 bytes with sha256"),
            "{text}"
        );
        assert!(
            text.contains("the previous checkpoint `") && text.contains("ckpt-20` verifies"),
            "{text}"
        );
        // A missing manifest is corrupt too.
        fs::remove_file(tmp.path().join("checkpoints/ckpt-20").join(MANIFEST)).unwrap();
        let err = ckpts
            .load(&tmp.path().join("checkpoints/ckpt-20"))
            .unwrap_err();
        assert!(
            err.to_string().contains("cannot read its manifest.json"),
            "{err}"
        );
        assert!(
            err.to_string().contains("no earlier checkpoint verifies"),
            "{err}"
        ); // The run state a resume trusts is sealed too: an edited step is refused.
        let newest = tmp.path().join("checkpoints/ckpt-30");
        fs::write(newest.join("model.bin"), b"new").unwrap();
        ckpts.load(&newest).unwrap();
        let manifest = fs::read_to_string(newest.join(MANIFEST)).unwrap();
        assert!(manifest.contains("\"global_step\": 30"), "{manifest}");
        fs::write(
            newest.join(MANIFEST),
            manifest.replace("\"global_step\": 30", "\"global_step\": 3"),
        )
        .unwrap();
        let err = ckpts.load(&newest).unwrap_err().to_string();
        assert!(err.contains("was changed after it was written"), "{err}");
    }

    #[test]
    fn the_newest_are_kept_and_the_best_beside_them() {
        let tmp = tempfile::tempdir().unwrap();
        let mut ckpts = Checkpoints::new(tmp.path(), 2);
        let steps = |c: &Checkpoints| c.list().into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        for step in [1, 2, 3] {
            ckpts.save(step, 0, &[("w", b"w")], &json!({})).unwrap();
        }
        assert_eq!(steps(&ckpts), [2, 3]);
        // The best is the newest: two kept, not three.
        ckpts.protect(Some(4));
        ckpts.save(4, 0, &[("w", b"w")], &json!({})).unwrap();
        assert_eq!(steps(&ckpts), [3, 4]);
        // The best falls behind: kept beside the two newest.
        ckpts.save(5, 0, &[("w", b"w")], &json!({})).unwrap();
        ckpts.save(6, 0, &[("w", b"w")], &json!({})).unwrap();
        assert_eq!(steps(&ckpts), [4, 5, 6]);
    }

    #[test]
    fn an_interim_checkpoint_counts_for_none_and_goes_with_the_next_regular_one() {
        let tmp = tempfile::tempdir().unwrap();
        let ckpts = Checkpoints::new(tmp.path(), 2);
        let steps = |c: &Checkpoints| c.list().into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        for step in [15, 30] {
            ckpts.save(step, 0, &[("w", b"w")], &json!({})).unwrap();
        }
        // A signal at step 31: nothing removed, and the interim one is the newest to continue.
        ckpts
            .save_interim(31, 2, &[("w", b"w")], &json!({}))
            .unwrap();
        assert_eq!(steps(&ckpts), [15, 30, 31]);
        assert_eq!(ckpts.newest().unwrap().unwrap().global_step, 31);
        // The continued run's next regular checkpoint: what an uninterrupted run keeps.
        ckpts.save(45, 3, &[("w", b"w")], &json!({})).unwrap();
        assert_eq!(steps(&ckpts), [30, 45]);
        // A regular checkpoint's manifest says nothing of it.
        let manifest = fs::read_to_string(tmp.path().join("ckpt-45").join(MANIFEST)).unwrap();
        assert!(!manifest.contains("interim"), "{manifest}");
    }

    #[test]
    fn file_names_stay_inside_the_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let ckpts = Checkpoints::new(tmp.path(), 1);
        for bad in ["../x", "a/b", "", MANIFEST] {
            assert!(
                matches!(
                    ckpts.save(1, 1, &[(bad, b"x")], &json!({})),
                    Err(CheckpointError::BadName(_))
                ),
                "{bad}"
            );
        }
        assert!(ckpts.list().is_empty());
    }
}
