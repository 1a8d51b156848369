//! Sealed folders: every file a checkpoint or saved model holds is listed with its size and
//! sha256 in the folder's `manifest.json`, and the manifest itself is covered by
//! `manifest.sha256`, so that no byte of the folder — weights, optimizer state, the run state a
//! resume trusts — changes without its reader saying so.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read as _, Write as _};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The manifest's own digest (hex sha256 of its bytes).
pub const DIGEST: &str = "manifest.sha256";

/// What a manifest says of one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Hex sha256 of its bytes.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
}

impl FileEntry {
    /// The entry of `bytes`.
    pub fn of(bytes: &[u8]) -> FileEntry {
        FileEntry {
            sha256: crate::project::hex(&Sha256::digest(bytes)),
            bytes: bytes.len() as u64,
        }
    }
}

/// The entry of the file at `path`, read in pieces.
pub fn hash_file(path: &Path) -> std::io::Result<FileEntry> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok(FileEntry {
        sha256: crate::project::hex(&hasher.finalize()),
        bytes: total,
    })
}

/// Writes `manifest` (its bytes) and its digest into `dir`, each synced to disk.
pub fn seal(dir: &Path, manifest: &[u8]) -> std::io::Result<()> {
    write_synced(&dir.join(MANIFEST), manifest)?;
    let digest = FileEntry::of(manifest).sha256;
    write_synced(&dir.join(DIGEST), format!("{digest}\n").as_bytes())
}

/// The manifest of `dir` when its digest matches; the problem otherwise.
pub fn unseal(dir: &Path) -> Result<Vec<u8>, String> {
    let text =
        fs::read(dir.join(MANIFEST)).map_err(|e| format!("cannot read its {MANIFEST}: {e}"))?;
    let digest = fs::read_to_string(dir.join(DIGEST))
        .map_err(|e| format!("cannot read its {DIGEST}: {e}"))?;
    let actual = FileEntry::of(&text).sha256;
    if digest.trim() != actual {
        return Err(format!(
            "its {MANIFEST} was changed after it was written (sha256 {actual}, {DIGEST} says {})",
            digest.trim()
        ));
    }
    Ok(text)
}

/// Checks every file `files` lists in `dir` against its entry.
pub fn check_files(dir: &Path, files: &BTreeMap<String, FileEntry>) -> Result<(), String> {
    for (name, entry) in files {
        if !is_plain(name) {
            return Err(format!(
                "its {MANIFEST} names `{name}`, which is not a plain file name"
            ));
        }
        let found = hash_file(&dir.join(name)).map_err(|e| format!("cannot read `{name}`: {e}"))?;
        if found != *entry {
            return Err(format!(
                "`{name}` has {} bytes with sha256 {}, the manifest says {} bytes with sha256 {}",
                found.bytes, found.sha256, entry.bytes, entry.sha256
            ));
        }
    }
    Ok(())
}

/// Whether `name` is a file name without folders.
pub fn is_plain(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// `written`, the result of filling the folder `tmp` before it is renamed into place; an error
/// takes the half-written folder with it.
pub(crate) fn or_remove<T, E>(tmp: &Path, written: Result<T, E>) -> Result<T, E> {
    if written.is_err() {
        let _ = std::fs::remove_dir_all(tmp);
    }
    written
}

/// Removes the folders that writes interrupted by a crash or `kill -9` left in `dir`
/// (`.ckpt-8.tmp-<pid>`, `.ckpt-8.old-<pid>`, `.step-8.tmp-<pid>`): never read, they would stay
/// forever. Only while the project's lock is held, so no write of another command is undone.
pub fn remove_leftovers(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let left = name.starts_with('.') && (name.contains(".tmp-") || name.contains(".old-"));
        if left && entry.path().is_dir() {
            match fs::remove_dir_all(entry.path()) {
                Ok(()) => log::info!(
                    "removed {}, left by an interrupted write",
                    entry.path().display()
                ),
                Err(e) => log::warn!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}

/// Writes `bytes` to `path` and syncs it to disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_folder_notices_any_change() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("w.bin"), b"weights").unwrap();
        let files: BTreeMap<String, FileEntry> =
            [("w.bin".to_owned(), FileEntry::of(b"weights"))].into();
        seal(dir.path(), &serde_json::to_vec(&files).unwrap()).unwrap();
        let text = unseal(dir.path()).unwrap();
        let read: BTreeMap<String, FileEntry> = serde_json::from_slice(&text).unwrap();
        check_files(dir.path(), &read).unwrap();
        fs::write(dir.path().join("w.bin"), b"weighTs").unwrap();
        let err = check_files(dir.path(), &read).unwrap_err();
        assert!(err.contains("`w.bin` has 7 bytes with sha256"), "{err}");
        fs::write(dir.path().join(MANIFEST), b"{}").unwrap();
        let err = unseal(dir.path()).unwrap_err();
        assert!(err.contains("was changed after it was written"), "{err}");
    }
}
