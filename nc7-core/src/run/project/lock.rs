//! One command at a time per project: every command that writes into a project (`train`,
//! `export`, `infer`, `evaluate-kpi`, `extract-data`) holds the project's lock while it runs.
//! The lock is the system's (`flock` on `.nc7.lock`), so it goes with its process however the
//! process ends — `kill -9`, a crash, a lost machine — and nothing is ever left stuck; the file
//! only says who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use super::{ProjectError, io};

/// The lock file, in the project's folder.
pub const LOCK_FILE: &str = ".nc7.lock";

/// A project's lock, held until dropped.
#[derive(Debug)]
pub struct ProjectLock {
    file: File,
    path: PathBuf,
}

impl ProjectLock {
    /// Takes `project`'s lock for `command` (what the holder's record says, `train`), or says
    /// which command holds it. A record left by a command that ended without releasing it is
    /// noted and replaced.
    pub fn acquire(project: &Path, command: &str) -> Result<ProjectLock, ProjectError> {
        let path = project.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open", &path))?;
        let mut record = String::new();
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let _ = file.read_to_string(&mut record);
                return Err(ProjectError::InUse {
                    project: project.to_owned(),
                    holder: describe(&record),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &path)(e)),
        }
        let _ = file.read_to_string(&mut record);
        if !record.trim().is_empty() {
            log::info!(
                "{}: {} ended without releasing the project (killed or crashed); this command takes it over",
                path.display(),
                describe(&record)
            );
        }
        let text = serde_json::json!({
            "pid": std::process::id(),
            "command": command,
            "host": super::host_name(),
            "since": super::rfc3339(std::time::SystemTime::now()),
        });
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{text}"))
            .and_then(|()| file.flush())
            .map_err(io("write", &path))?;
        Ok(ProjectLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ProjectLock {
    fn drop(&mut self) {
        // An empty record is a clean release; the system lock goes when the file closes.
        let _ = self.file.set_len(0);
    }
}

/// Who a lock record names: `` `train` (pid 4242 on host, since 2026-12-02T11:02:03Z) ``.
fn describe(record: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(record.trim()).unwrap_or_default();
    match (v["command"].as_str(), v["pid"].as_u64()) {
        (Some(command), Some(pid)) => format!(
            "`{command}` (pid {pid} on {}, since {})",
            v["host"].as_str().unwrap_or("?"),
            v["since"].as_str().unwrap_or("?")
        ),
        _ => "another nc7 command".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_none_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = ProjectLock::acquire(dir.path(), "train").unwrap();
        let err = ProjectLock::acquire(dir.path(), "infer")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is in use by `train` (pid ")
                && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        let again = ProjectLock::acquire(dir.path(), "infer").unwrap();
        let record = std::fs::read_to_string(again.path()).unwrap();
        assert!(record.contains(r#""command":"infer""#), "{record}");
        drop(again);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(),
            ""
        );
        // A record without its lock (its process was killed): taken over.
        std::fs::write(
            dir.path().join(LOCK_FILE),
            r#"{"pid": 1, "command": "train"}"#,
        )
        .unwrap();
        ProjectLock::acquire(dir.path(), "train").unwrap();
    }
}
