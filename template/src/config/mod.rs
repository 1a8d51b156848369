//! The project's global settings (`project/project.toml`): where things live and which device
//! runs. Folders that do not exist yet are created when the settings are read.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file the settings are read from, in the project folder.
pub const FILE: &str = "project.toml";

/// `project.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    /// Data files (`cargo run -- write-shapes project/data` puts the shapes there).
    #[serde(default = "data")]
    pub data_dir: PathBuf,
    /// Weights from elsewhere (pretrained backbones for `load_config`).
    #[serde(default = "weights")]
    pub weights_dir: PathBuf,
    /// Logs, such as the experiments table `experiments.csv`.
    #[serde(default = "logs")]
    pub logs_dir: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`: what `cargo xtask train` passes as `--device`.
    #[serde(default = "device")]
    pub device: String,
}

fn data() -> PathBuf {
    "data".into()
}
fn weights() -> PathBuf {
    "weights".into()
}
fn logs() -> PathBuf {
    "logs".into()
}
fn device() -> String {
    "{{device}}".into()
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            data_dir: data(),
            weights_dir: weights(),
            logs_dir: logs(),
            device: device(),
        }
    }
}

impl GlobalConfig {
    /// Reads `root/project.toml` (the defaults when there is none), makes its folders absolute
    /// under `root` and creates them.
    pub fn load(root: &Path) -> Result<GlobalConfig, String> {
        let file = root.join(FILE);
        let mut config: GlobalConfig = match std::fs::read_to_string(&file) {
            Ok(text) => toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => GlobalConfig::default(),
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        for dir in [
            &mut config.data_dir,
            &mut config.weights_dir,
            &mut config.logs_dir,
        ] {
            if dir.is_relative() {
                *dir = root.join(&*dir);
            }
            std::fs::create_dir_all(&*dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        let c = GlobalConfig::load(dir.path()).unwrap();
        assert_eq!(c.device, "{{device}}");
        assert!(dir.path().join("data").is_dir() && dir.path().join("logs").is_dir());
        std::fs::write(
            dir.path().join(FILE),
            "logs_dir = \"elsewhere\"\nbatch = 3\n",
        )
        .unwrap();
        assert!(
            GlobalConfig::load(dir.path())
                .unwrap_err()
                .contains("batch")
        );
    }
}
